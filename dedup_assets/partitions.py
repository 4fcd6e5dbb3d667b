import dagster as dg

# One partition per ingestion batch; the new-blobs sensor and `dedup run` add them.
batch_partitions = dg.DynamicPartitionsDefinition(name="batches")
