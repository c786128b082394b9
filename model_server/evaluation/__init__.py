"""Scoring a model on geotagged photos: the papers' metrics, the flow's rows, the drawn map's scores, the
uniform and retrieval baselines, and the choice of the distribution's guidance. `geoplonk eval` and
`geoplonk calibrate` are thin commands over this package."""
