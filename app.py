#!/usr/bin/env python3
"""CDK entry point: `make synth` (CDK_OUTDIR=cdk.out python app.py) or `cdk deploy --all`."""

from stacks.platform import create_app

if __name__ == "__main__":
    create_app().app.synth()
