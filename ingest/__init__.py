"""Ingestion: encoders, codecs, and bulk loading into OpenSearch."""
