"""The 44 items of CLAIM 2024, paraphrased (see :mod:`cxrlab.reports.claim` for the answers).

Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence in Medical Imaging
(CLAIM): 2024 Update. Radiol Artif Intell 2024;6(4):e240300. The texts below are our own short
paraphrases of each item, not the checklist's wording; the checklist is the reference.
"""

from __future__ import annotations

CITATION = (
    "Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence in Medical "
    "Imaging (CLAIM): 2024 Update. Radiol Artif Intell. 2024;6(4):e240300. "
    "doi:10.1148/ryai.240300"
)
STATUS_TEXT = {
    "filled": "filled from files",
    "prefilled": "pre-filled, author to confirm",
    "author": "author only",
}

#: (number, section, paraphrased item) for the 44 items, in the checklist's order.
ITEMS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "Title or abstract",
        "Say that the study is about AI and name the kind of method (for example deep learning).",
    ),
    (
        2,
        "Title or abstract",
        "Give a structured summary of design, methods, results and conclusions.",
    ),
    (
        3,
        "Introduction",
        "Give the scientific and clinical background, the intended use and the "
        "role the AI is meant to play.",
    ),
    (
        4,
        "Introduction",
        "State the aims and objectives, and the hypotheses unless the approach is data-driven.",
    ),
    (5, "Methods: study design", "Say whether the study is prospective or retrospective."),
    (
        6,
        "Methods: study design",
        "Say what the study is for (model development, exploration, "
        "feasibility, non-inferiority...).",
    ),
    (7, "Methods: data", "Name the sources of the data."),
    (8, "Methods: data", "Give the inclusion and exclusion criteria."),
    (9, "Methods: data", "Describe every preprocessing step applied to the data."),
    (10, "Methods: data", "Describe how subsets of the data were selected, if any were."),
    (11, "Methods: data", "Describe how the data were de-identified."),
    (12, "Methods: data", "Say how missing data were handled."),
    (13, "Methods: data", "Describe the image acquisition protocol."),
    (
        14,
        "Methods: reference standard",
        "Define how the reference standard was obtained, in enough detail to repeat it.",
    ),
    (15, "Methods: reference standard", "Explain why this reference standard was chosen."),
    (
        16,
        "Methods: reference standard",
        "Say who annotated the reference standard and what "
        "their qualifications and preparation were.",
    ),
    (
        17,
        "Methods: reference standard",
        "Describe how the test set was annotated, well enough to replicate it.",
    ),
    (
        18,
        "Methods: reference standard",
        "Report inter- and intra-rater variability of the "
        "annotations and how disagreements were handled.",
    ),
    (
        19,
        "Methods: data partitions",
        "Say how the data were assigned to partitions, with the proportions.",
    ),
    (
        20,
        "Methods: data partitions",
        "Say at which level (patient, study, image...) the partitions are disjoint.",
    ),
    (21, "Methods: testing data", "Give the intended sample size and how it was determined."),
    (
        22,
        "Methods: model",
        "Describe the model in detail: inputs, outputs, layers and connections.",
    ),
    (23, "Methods: model", "Name the software libraries, frameworks and packages, with versions."),
    (
        24,
        "Methods: model",
        "Say how the model's parameters were initialised (random, transfer learning...).",
    ),
    (
        25,
        "Methods: training",
        "Describe the training: augmentation, hyperparameters, how many models were trained.",
    ),
    (26, "Methods: training", "Say how the final model was selected."),
    (27, "Methods: training", "Describe any ensembling."),
    (28, "Methods: evaluation", "Name the metrics of model performance."),
    (
        29,
        "Methods: evaluation",
        "Describe the statistical measures of significance and uncertainty.",
    ),
    (30, "Methods: evaluation", "Describe robustness or sensitivity analyses."),
    (
        31,
        "Methods: evaluation",
        "Describe explainability methods, their parameters and how they were validated.",
    ),
    (32, "Methods: evaluation", "Describe the evaluation on internal data."),
    (33, "Methods: evaluation", "Describe testing on external data."),
    (34, "Methods: evaluation", "Give the clinical trial registration, where one applies."),
    (
        35,
        "Results: data",
        "Give the numbers of patients or examinations included and excluded (a flow diagram).",
    ),
    (
        36,
        "Results: data",
        "Describe the demographic and clinical characteristics in each partition and data set.",
    ),
    (
        37,
        "Results: model performance",
        "Report the performance metrics with their statistical uncertainty.",
    ),
    (
        38,
        "Results: model performance",
        "Report estimates of diagnostic performance and their precision.",
    ),
    (39, "Results: model performance", "Analyse the failures: the incorrectly classified cases."),
    (40, "Discussion", "State the limitations: bias, statistical uncertainty, generalisability."),
    (
        41,
        "Discussion",
        "Discuss the implications for practice, with the intended use and clinical role.",
    ),
    (42, "Other information", "Point to the full study protocol or further technical details."),
    (43, "Other information", "State whether software, trained model and data are available."),
    (
        44,
        "Other information",
        "Name the sources of funding and other support, and the funders' role.",
    ),
)
