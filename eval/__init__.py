"""Evaluation: BEIR collections, metrics, the query loop, result files and fusion tuning.

Its own package because it is not on the query path: `osneural.plugin` answers queries, this
measures them (and fits specs to judgments) through the same public `Searcher`.
"""
