"""The browser demo: captioning.demo.app (the Gradio page, `python -m captioning demo`) on top of
captioning.demo.explain (what the page shows, no web framework) and captioning.demo.beams (the
ranked beams of one image)."""
