"""The run directory: its writer (``store``), its typed records (``records``) and its one reader
(``reader``: ``load_run``). Nothing here imports torch."""
