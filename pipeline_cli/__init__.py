"""The command line: submit prompt files, estimate them, follow jobs; local stack or deployed stack."""
