//! Test harness: free loopback ports, kubeconfigs, real kubectl, stack launchers.
