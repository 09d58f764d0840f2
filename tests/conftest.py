pytest_plugins = ["edgeloom_testkit.fixtures"]
