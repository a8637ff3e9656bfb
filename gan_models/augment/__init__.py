"""Does synthetic data help a classifier? The GAN data-augmentation experiment.

``ganops augment`` (the DVC pipeline ``pipelines/augment``, the Prefect flow ``augment``) runs,
for a labelled processed dataset and each k of a low-data regime:

1. a seeded k-per-class subset of the train split (:mod:`.subsets`; nested across k, identical
   across arms, disjoint from the test split by construction);
2. a conditional generator trained on that subset only, evaluated and registered like any model;
3. a downstream classifier (:mod:`.classifier`, its own small CNN and params) trained per arm
   (real, real + classical augmentation (:mod:`.classical`), real + synthetic at stated ratios,
   both, synthetic only) and seed, tested on the untouched real test split;
4. the report (:mod:`.report`): accuracy with 95% intervals per arm and k, each arm's paired
   difference from real-only, a plot, and the conclusion as the numbers say it.

:mod:`.experiment` runs the whole; :mod:`.config` reads ``params/augment.yaml``.
"""
