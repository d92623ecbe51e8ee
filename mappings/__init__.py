"""OpenSearch index templates shipped as JSON package data."""
