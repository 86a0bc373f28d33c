"""End-to-end: operator + runtime against a real kube-apiserver and real backends."""
