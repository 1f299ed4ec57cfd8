//! Throwaway certificate authorities and leaf certificates for loopback TLS.
