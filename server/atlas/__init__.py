"""`ldam atlas`: every unit of a layer rendered as a batch job, on one machine or across a Ray
cluster (plan: what to render; render: one batch of units; executors: where batches run;
gallery: the static page; manifest: `atlas.json`)."""
