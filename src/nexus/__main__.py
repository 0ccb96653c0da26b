from nexus.cli.main import run

run()
