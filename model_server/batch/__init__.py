"""`geoplonk batch`: archives of photos on a Ray cluster, written as one GeoParquet dataset.

rows.py: the dataset's schema and GeoParquet metadata, one row from a server-shaped result (no Ray, no torch).
stages.py: what runs on the workers (read bytes, decode + embed, sample + products through the server's
per-photo pipeline).  job.py: the Ray Data pipeline, its inputs, reruns and the final listing.
"""

# Photos per call of a model actor (`geoplonk batch --batch-size`); here, not in job.py, so that the CLI's help
# needs neither Ray nor pyarrow.
LOCATE_BATCH = 8
