"""Beam transforms: reading record batches, decoding, attributing and writing (thin adapters
over the Beam-free `attributions` package and `transforms.records`)."""
