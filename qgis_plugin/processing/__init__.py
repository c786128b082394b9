"""GeoPlonk's Processing provider: batch geolocation for the toolbox, the modeler and qgis_process."""
