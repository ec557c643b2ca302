"""`orchestrator select`: the pure page walk and criteria (`walk`), and the session that
pages through the API and prints the runs that match (`session`)."""
