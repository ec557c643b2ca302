"""The Altostrat workflow API, as this client speaks it: one request in, one classified
outcome out. `client` sends; `outcomes` names what an answer means; `models` are the
response shapes; `headers` reads what the server says of its rate limit."""
