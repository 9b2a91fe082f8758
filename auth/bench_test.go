package auth

import "testing"

// BenchmarkCheck measures one login per iteration: the cost every CONNECT
// pays. $7$101 is what mosquitto_passwd 2.0 and HashPassword write, $7$1000
// what mosquitto 2.1 writes.
func BenchmarkCheck(b *testing.B) {
	cases := []struct {
		name, file, user, password string
	}{
		{"7$101", "pbkdf2-101.txt", "pi", "raspberry"},
		{"7$1000", "mosquitto-vector.txt", "user", "password"},
		{"7$101/unknown-user", "pbkdf2-101.txt", "mallory", "raspberry"},
		{"6$", "sha512.txt", "legacy", "hunter2"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p, err := Load(vectorDir+c.file, nil)
			if err != nil {
				b.Fatal(err)
			}
			want := c.user != "mallory"
			for b.Loop() {
				if p.Check(c.user, c.password) != want {
					b.Fatal("wrong result")
				}
			}
		})
	}
}
