package slipway

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sealer encrypts secrets at rest (per-repository webhook secrets, build secrets,
// forge tokens) with AES-256-GCM. A sealed value is nonce || ciphertext || tag.
// The additional data binds a sealed value to where it is stored (for example
// "repo:42:webhook_secret"), so a value copied to another row does not open.
// A Sealer is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a 32-byte key given as 64 hex digits or as
// standard base64 (the form of SLIPWAY_SECRET_KEY; `openssl rand -hex 32` makes one).
func NewSealer(key string) (*Sealer, error) {
	key = strings.TrimSpace(key)
	raw, err := hex.DecodeString(key)
	if err != nil {
		raw, err = base64.StdEncoding.DecodeString(key)
	}
	if err != nil || len(raw) != 32 {
		return nil, errors.New("the key must be 32 bytes, as 64 hex digits or base64 (make one with `openssl rand -hex 32`)")
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to ad.
func (s *Sealer) Seal(plaintext []byte, ad string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(ad))
}

// Open decrypts a value sealed with the same key and ad. It fails when the key
// changed, the value was altered, or ad differs; the error never holds the value.
func (s *Sealer) Open(sealed []byte, ad string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errors.New("opening sealed secret: too short")
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, errors.New("opening sealed secret: wrong key or altered value (was SLIPWAY_SECRET_KEY changed?)")
	}
	return out, nil
}
