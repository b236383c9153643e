"""The interconnect stage (NVLink, P2P, collectives; HCCS): stage.py, measure.py, localise.py."""
