"""teaming: classifiers trained on what people said, deployed together with human reviewers."""

__version__ = "0.1.0"
