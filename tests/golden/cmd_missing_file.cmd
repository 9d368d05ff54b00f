tests/golden/no_such_spec.yaml
