"""The Textual front door: home, live runs, replay and comparison. Imports textual; the engine never does."""
