"""The contract: the transfer event model, status tables, exact JSON and time, the pure field readers every parser shares, and the committed schema files. Depends on nothing else in the bridge."""
