"""The operator's side: the command line, the experiment API, the local fleet,
certificates, results pages. Nothing that runs inside a Flower app imports
this package, and it is not part of the app bundle devices receive."""
