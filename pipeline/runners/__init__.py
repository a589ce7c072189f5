"""Running the pipeline over sources: the engine (tracking, crop selection, embedding, matching), the file
and live runners, video sources and their timelines, and the evaluation runner."""
