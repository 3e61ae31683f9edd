"""Classify your own images with a method of the book, trained on Omniglot (chapter 13):

    python -m utils.predict --method ProtoNet --support DIR IMAGE [IMAGE ...]

``--help`` says what DIR must hold. The command is chapter 13's ``predict_main``.
"""

import sys

from .methods import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
