"""The application layer: what stands above the daemons.

`symphony.app.cli` dispatches subcommands to every daemon, `up` runs them all
as one system, `demo` and `chaos` drive a running system. Nothing below this
package imports it: the core (`symphony.*`) imports only the journal, a daemon
imports the core and the journal, and only the application imports daemons.
"""
