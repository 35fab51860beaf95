"""One message pipeline for every kind of conversation: group commit
(``pipeline``), local fan-out (``hub``), fan-out across processes
(``fanout/``), the hot-path cache (``directory``), the caller context
(``caller``), the interaction-event outbox (``outbox``) and the scheduler."""
