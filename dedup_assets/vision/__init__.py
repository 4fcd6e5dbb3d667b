"""The image library under the pipeline: plain functions over bytes and arrays.

Nothing here knows about Dagster, so every step can be tested and benchmarked alone.
"""
