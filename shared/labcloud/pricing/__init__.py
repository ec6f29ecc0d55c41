"""Instance catalog, service prices, the cost models of lab 01, the cost ledger and the cost guard."""
