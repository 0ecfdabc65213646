from gateway.activation.cli import cli

cli(prog_name="edugate activation")
