"""The IMAP door: bound mailboxes feed groups, each message exactly once."""
