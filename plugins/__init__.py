"""nlpfw's built-in plugins, one module each (imported as `nlpfw_plugins.*`)."""
