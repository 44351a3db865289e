"""Tables and figures as Markdown, HTML, CSV and LaTeX, written safely into a report folder.
"""
