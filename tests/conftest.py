pytest_plugins = ["edgeloom.testing.fixtures"]
