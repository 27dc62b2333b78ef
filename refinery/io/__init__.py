"""Storage layer: URIs (local paths or s3://) to pyarrow filesystems, Parquet shards, WARC."""
