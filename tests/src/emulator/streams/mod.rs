//! `pods/exec`, `pods/attach`, `pods/portforward` and `pods/log`, over WebSocket
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `SPDY/3.1+portforward.k8s.io`) and SPDY/3.1.
