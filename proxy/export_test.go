package proxy

import "time"

// SetAckHold sets how long s holds PING acks; call it before s serves.
func SetAckHold(s *Server, d time.Duration) { s.heldAcks = d }
