"""Explanation-quality metrics: plain numpy over a model's score function and an attribution
function, no Beam. The launcher runs them on a sample of rows (pipeline.quality).

ranks.py          Spearman correlation per row (average ranks for ties)
units.py          the units attributions are ranked and deleted in: features, pixels, patches, positions
faithfulness.py   deletion and insertion curves against a random order
infidelity.py     infidelity (Yeh et al. 2019), as captum.metrics.infidelity
sensitivity.py    sensitivity-max (Yeh et al. 2019), as captum.metrics.sensitivity_max
randomisation.py  the model's weights shuffled, for the model-parameter randomisation test
"""
