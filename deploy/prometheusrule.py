"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/teaming-rules.yaml: one set of alert rules,
for a plain Prometheus and for the Prometheus Operator.

    python deploy/prometheusrule.py
"""

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = "# Written by deploy/prometheusrule.py from deploy/prometheus/teaming-rules.yaml: edit that, then run this.\n"


def rendered() -> str:
    rules = yaml.safe_load((HERE / "prometheus" / "teaming-rules.yaml").read_text())
    body = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "teaming", "labels": {"release": "prometheus"}},
        "spec": rules,
    }
    return HEADER + yaml.safe_dump(body, sort_keys=False, width=110)


if __name__ == "__main__":
    (HERE / "kubernetes" / "prometheusrule.yaml").write_text(rendered())
