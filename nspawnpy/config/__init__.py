"""What the user asked for: the settings table, value parsers, the command line, `.nspawn`
files and the INI dialect they are written in. Runs on the host side, before anything is set up."""
