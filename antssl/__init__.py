"""antssl: self-supervised features and analogue search for Antarctic coastal imagery, on Ray."""

__version__ = "0.1.0"
