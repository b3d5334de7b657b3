package runner

// DeviceName is the name of the device the model's weights are on ("CPU", "CUDA0").
func (m *Model) DeviceName() string { return m.g.Device.Name }

// MMProjPath is the path of the loaded mmproj file, "" for a text-only model.
func (m *Model) MMProjPath() string {
	if !m.HasVision() {
		return ""
	}
	return m.g.MMProj.Path
}
