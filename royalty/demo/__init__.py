"""The end-to-end demo: a scripted community of operators, licensees and contributors."""
