"""What a run leaves: metrics (`metrics`), the results file and its schema (`results`), the report of a run (`report`), plots (`plots`) and loggers (`loggers`)."""
