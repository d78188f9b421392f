"""What the notebooks need around the science: parameter checks (`params`), paths relative to
the repository root (`paths`) and the report sections they write (`report`)."""
