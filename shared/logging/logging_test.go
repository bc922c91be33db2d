package logging

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"nats://s3cret@10.0.0.1:4222":                   "nats://redacted@10.0.0.1:4222",
		"nats://user:pass@a:1,nats://b:2, nats://t@c:3": "nats://redacted@a:1,nats://b:2,nats://redacted@c:3",
		"": "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
