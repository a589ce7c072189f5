"""What a command and the web app share, below both: finding a person by photo (:mod:`pipeline.services.search`),
grouping the unknown tracks (:mod:`pipeline.services.unknowns`). Commands (``pipeline.commands``) and the web app
(``pipeline.web``) import these; these import neither."""
