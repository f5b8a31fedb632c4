"""Projection: `.kmap` profiles turned into a child's environment, private files, envfiles or stdin.

`kmap` parses and composes profiles (pure); `resolve` asks a store for exactly the secret names the
winning directives need and runs `exec:` sources; `env`, `files` and `envfmt` build what the
targets need; `run` starts (or becomes) the child and supervises it. Nothing here imports the
vault, crypto, bundles or the daemon server (an import-linter contract): a `Store` is passed in.
"""
