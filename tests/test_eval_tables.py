"""Tables: CI formatting, Markdown, LaTeX (booktabs, escaping)."""

import math

import pandas as pd

from cxrlab.reports import tables as T


def test_format_ci_percent_and_decimal():
    entry = {"value": 0.9512, "ci_low": 0.93849, "ci_high": 0.9621}
    assert T.format_ci(entry, percent=True) == "95.1 (93.8-96.2)"
    assert (
        T.format_ci({"value": 0.9012, "ci_low": 0.891, "ci_high": 0.9063}, percent=False)
        == "0.901 (0.891-0.906)"
    )
    assert (
        T.format_ci({"value": -0.009, "ci_low": -0.031, "ci_high": 0.013}, percent=True)
        == "-0.9 (-3.1 to 1.3)"
    )
    assert (
        T.format_ci({"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}, percent=True)
        == "n/a"
    )
    assert T.format_ci({"value": 0.5, "ci_low": math.nan, "ci_high": 0.6}, percent=True) == "50.0"


def test_metrics_table_order_and_labels():
    metrics = {
        "macro_f1": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6},
        "accuracy": {"value": 0.7016, "ci_low": 0.69, "ci_high": 0.71},
    }
    frame = T.metrics_table(metrics)
    assert frame["Metric"].tolist() == ["Accuracy (%)", "Macro F1 (%)"]
    assert frame["Value (95% CI)"].tolist() == ["70.2 (69.0-71.0)", "50.0 (40.0-60.0)"]


def test_per_class_table():
    ci = {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    per_class = {"Lung_Opacity": {"recall": ci, "specificity": ci, "roc_auc": ci, "support": 12}}
    frame = T.per_class_table(per_class)
    assert frame.columns.tolist() == ["Class", "n", "Sensitivity (%)", "Specificity (%)", "ROC AUC"]
    assert frame.iloc[0].tolist() == [
        "Lung Opacity",  # the figures' spelling
        "12",
        "80.0 (70.0-90.0)",
        "80.0 (70.0-90.0)",
        "0.800 (0.700-0.900)",
    ]


def test_markdown_rendering():
    frame = pd.DataFrame({"Class": ["COVID", "Viral Pneumonia"], "n": ["12", "3"]})
    md = T.to_markdown(frame).splitlines()
    assert md[0] == "| Class           |   n |"
    assert md[1] == "| --------------- | --: |"
    assert md[3] == "| Viral Pneumonia |   3 |"


def test_latex_booktabs_and_escaping():
    frame = pd.DataFrame(
        {
            "Class": ["Lung_Opacity"],
            "Value (95% CI)": ["95.1 (93.8-96.2)"],
            "Mean ± SD": ["1.0 ± 0.1"],
        }
    )
    tex = T.to_latex(frame, caption="Per-class 95% CIs", label="tab:x", notes="n = 3 & more")
    lines = tex.splitlines()
    assert "\\toprule" in lines and "\\midrule" in lines and "\\bottomrule" in lines
    assert "\\begin{tabular}{lrr}" in lines
    assert "Class & Value (95\\% CI) & Mean $\\pm$ SD \\\\" in lines
    assert "Lung\\_Opacity & 95.1 (93.8--96.2) & 1.0 $\\pm$ 0.1 \\\\" in lines
    assert "\\caption{Per-class 95\\% CIs}" in lines and "\\label{tab:x}" in lines
    assert "n = 3 \\& more" in tex
    assert T.latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k"
    )


def test_latex_leaves_hyphens_outside_intervals_alone():
    frame = pd.DataFrame({"Run": ["run-1-2"], "Δ": ["-0.9 (-3.1 to 1.3)"]})
    tex = T.to_latex(frame)
    assert "run-1-2 & -0.9 (-3.1 to 1.3) \\\\" in tex
    assert "93.1--95.2" in T.to_latex(pd.DataFrame({"Min-max": ["93.1-95.2"]}))
    assert "$\\Delta$" in tex
