"""Helpers shared by the tests: servers, clocks, kits and subprocess scripts. No test
module imports another; what two share lives here."""
