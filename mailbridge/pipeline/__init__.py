"""The inbound pipeline: one module per stage, run in this order by deliver.py.

parse → route → classify → authorize → thread → extract → persist

Every door (SMTP, LMTP, IMAP, import) hands a `RawMessage` to
`Pipeline.deliver`; a stage ends the trip by raising `Reject`, `Hold` or
`Ignore` (types.py), and the outcome is recorded in the inbound log.
"""
